from bin_agent.router import Route, Router


def test_confident_items_go_to_their_compartment_and_unsure_ones_to_the_fallback():
    router = Router({"glass": "glass", "metal": "packaging"}, fallback="residual", confidence_threshold=0.6)
    assert router.route("glass", 0.9) == Route("glass", fallback=False)
    assert router.route("metal", 0.6) == Route("packaging", fallback=False)
    assert router.route("metal", 0.59) == Route("residual", fallback=True)
    assert router.route("unknown", 0.99) == Route("residual", fallback=True)
