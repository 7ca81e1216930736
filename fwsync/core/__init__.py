"""The pure core: (policy, observed state) → desired ruleset → diff → plan. No I/O here."""
