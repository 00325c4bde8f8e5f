"""The core: one job builder, one set of argument checks, and the engine that runs a job."""
