"""The local lab: where real brokers come from (native processes on 127.0.0.1), their health,
and fault injection (kill / pause / restart processes, network toxics through Toxiproxy)."""
