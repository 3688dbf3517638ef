"""Built-in drain actions on AWS: leave ELBv2 target groups, end the Auto Scaling lifecycle."""
