"""Live upstreams seen from the core (SPEC §5, §8): the verify triad (notifications,
active queries, client verification), refunds through an upstream, and payment reviews."""
