"""Analytic sizing: parameter and FLOP budgets, variant matching, memory and compute estimates."""
