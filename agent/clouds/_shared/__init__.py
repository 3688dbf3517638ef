"""Code several clouds share: the EC2-style token flow and path watchers."""
