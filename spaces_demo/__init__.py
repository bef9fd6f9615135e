"""The Gradio Space of copart_hub (installed as ``copart_hub.spaces_demo``)."""
