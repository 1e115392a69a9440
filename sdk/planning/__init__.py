"""Plans: what apply will do to each resource, and why."""
