"""onebit's Hydra launcher plugin: ``launcher=submitit_slurm`` runs :class:`.slurm.SlurmLauncher`, Hydra's submitit
SLURM launcher that first asks the cluster whether it can run the jobs at all (conf/launcher/submitit_slurm.yaml)."""
