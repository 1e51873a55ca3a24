"""SimSiam pretraining, linear and kNN evaluation (Chen & He, CVPR 2021)."""
