"""What the trajectories say: Gaussian HMMs (``hmm``), choosing k (``selection``), the pipeline over
a directory's fits (``states``), what the states mean (``transitions``), detours (``detours``),
studies compared (``compare``), tables from anywhere (``trajectories``), the results as labelled
datasets (``datasets``) and worker processes outside an orchestrator (``parallel``)."""
