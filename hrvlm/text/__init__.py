"""Text side: class prompts → text features (:mod:`.prompts`), QT-AFT's caption sources (:mod:`.captions`)."""
