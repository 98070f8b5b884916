"""Scenario engine: run a scenario's steps against an adapter, fold observations into a ledger,
and judge the outcome against the scenario's expectations."""
