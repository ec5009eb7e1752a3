"""The xuanjixiao "OneRec" series: NeighbourEnhancedDNN and Social4Rec (SessionLTV to come)."""
