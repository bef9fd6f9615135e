"""Training subpackage shared by all methods (installed as ``copart_hub.training``)."""
