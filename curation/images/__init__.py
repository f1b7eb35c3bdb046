"""Images as a shop page shows them: the one decode + normalise path (`decode`), the
content-addressed store (`store`), each stored image's normalised picture (`normalised`),
perceptual hashes (`hashing`) and per-image work over threads (`batch`)."""
