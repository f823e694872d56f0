"""The mini world: procedurally rendered WordNet shapes, their captions and datasets, offline.

``import hrvlm.miniworld.datasets`` registers the ``mini-*`` datasets in :mod:`hrvlm.data.registry`.
"""
