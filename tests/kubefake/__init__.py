"""A faithful fake Kubernetes API server for tests: the REST API as the official client and
kubectl use it, a scheduler, Job / Deployment / ReplicaSet / TTL / garbage-collection
controllers and a kubelet that runs each container's command as a local process.

Test infrastructure only: nothing under ``src/`` may import it. See README.md.
"""
