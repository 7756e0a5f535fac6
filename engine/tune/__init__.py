"""The Expert tier: sweeps run through Ray Tune."""
