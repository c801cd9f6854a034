"""The SLURM backend: steps as batch jobs on an HPC cluster, over SSH or on the login node."""
