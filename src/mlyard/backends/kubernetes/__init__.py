"""The Kubernetes backend: steps as batch/v1 Jobs, with portable GPU requests."""
