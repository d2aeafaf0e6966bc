"""Where mhmoe keeps things: the MHMOE_HOME layout, store URLs, atomic file writes."""
