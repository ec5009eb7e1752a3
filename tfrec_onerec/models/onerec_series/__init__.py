"""The xuanjixiao "OneRec" series: NeighbourEnhancedDNN (and, to come, Social4Rec and SessionLTV)."""
