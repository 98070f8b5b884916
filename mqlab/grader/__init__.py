"""The grader: learners' code judged the way production judges it, under faults.

``mqlab check`` runs the learner's file in a child process with a time and memory limit
(:mod:`mqlab.grader.child`), against the simulator or a real broker of the lab, while the
exercise's hidden check drives it and applies a seeded fault schedule
(:mod:`mqlab.grader.context`). Everything that happens is recorded as observations, and the
verdict comes from invariants on that history (:mod:`mqlab.grader.invariants`), never from
printed output. :mod:`mqlab.grader.run` puts it together; :mod:`mqlab.grader.report` says it
in words a learner can act on; :mod:`mqlab.grader.workspace` is the learner's folder and
:mod:`mqlab.grader.authoring` checks the course's own exercises.
"""
