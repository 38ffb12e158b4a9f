"""Built-in healthd probes, one module per failure mode; registered as entry points."""
