"""The built-in simulator: every system's semantics on a seeded virtual clock.

Run simulated code with :func:`mqlab.brokers.sim.clock.run_virtual`: it runs a coroutine on an
asyncio event loop whose clock is virtual, so ``asyncio.sleep(60)`` returns at once while
``loop.time()`` moves 60 seconds on. All simulated adapters share one :class:`SimWorld`
(clock, seeded randomness, faults) per run.
"""
