"""Class hierarchies: the WordNet 3.0 reader (:mod:`.wordnet`) and the trees and forests over a dataset's
leaves (:mod:`.trees`)."""
