"""Falco compatibility: the alert model, priorities and (in ``engine``) the rules language."""
