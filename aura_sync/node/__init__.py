"""The long-lived node: configuration, health and metrics, and the supervised node itself.

Layer: runtime.
"""
