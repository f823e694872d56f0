"""Evaluation: what one evaluation computes (:mod:`.request`), clean and robust zero-shot accuracy at every
level (:mod:`.evaluate`), provenance-carrying records (:mod:`.records`)."""
