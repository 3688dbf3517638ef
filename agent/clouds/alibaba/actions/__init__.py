"""Built-in drain actions on Alibaba Cloud: leave the SLB backends."""
