"""
Synthetic noisy partial labels on digits
========================================

A first check of the estimator on scikit-learn's 8x8 digits.
"""
import numpy as np
import matplotlib.pyplot as plt
plt.plot(np.arange(3))
