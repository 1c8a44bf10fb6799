"""CPU analysis of a feature store: pair scores, fusion, TAR@FAR, reject verification. Never imports torch."""
