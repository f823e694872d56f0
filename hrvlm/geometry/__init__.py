"""Poincaré-ball geometry as small pure functions (:mod:`.poincare`) and Theorem 1's margin–depth
quantities (:mod:`.theory`)."""
