"""runjobs: the fetch loop, job execution, leases and shutdown."""
