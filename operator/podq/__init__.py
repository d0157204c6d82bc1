"""podq: async Python jobs on Redis with SAQ's API, run by a Kubernetes operator."""
