"""MUSE metrics (VerbMem, KnowMem, PrivLeak), NLL and probe generations."""
