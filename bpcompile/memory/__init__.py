"""Memory planning: liveness over the schedule and the buffers statements write into."""
