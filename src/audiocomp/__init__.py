"""audiocomp: audio classification experiments under edge constraints."""
__version__ = "0.1.0"
