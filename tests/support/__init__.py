"""What the test tiers and the benchmark share: starting stacks, making tokens."""
