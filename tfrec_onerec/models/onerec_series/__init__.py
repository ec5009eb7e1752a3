"""The xuanjixiao "OneRec" series: NeighbourEnhancedDNN, Social4Rec and SessionLTV."""
