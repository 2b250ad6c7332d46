"""What a run leaves on disk and what it is called: files that are complete or absent
(`artifacts`), locks on the paths a process writes (`locks`), the run directory a process
claims (`directory`), a run's label and W&B name (`identity`), and a sweep's record of its
failed jobs (`sweeps`)."""
