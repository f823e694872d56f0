"""Results from records: majority baselines and intervals (:mod:`.metrics`), uncertainty over seeds and
images with paired verdicts (:mod:`.evidence`), reported | ours | difference tables (:mod:`.tables`)."""
