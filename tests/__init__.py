"""The test suite: unit/ (modules and the library API), e2e/ (the tools and the wheel run as a user runs them),
parity/ (numbers against the reference effdet 0.4.1); helpers/ holds what they share."""
