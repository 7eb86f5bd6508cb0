"""Everything that talks to Redis lives in this package."""
