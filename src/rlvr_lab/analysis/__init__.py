"""Token-probability analyses of text and data: For-Value data valuation (arXiv 2508.10180), Lastde detection."""
