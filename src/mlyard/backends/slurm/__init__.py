"""The SLURM backend: steps as batch jobs on an HPC cluster, reached over SSH or on the login node."""
