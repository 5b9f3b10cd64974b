"""Pulumi components of the sealer registry program, one ComponentResource per module."""
