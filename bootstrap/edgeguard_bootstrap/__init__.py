"""edgeguard-bootstrap: node set-up for the edgeguard bundle (standard library only)."""
