"""Request and response bodies: separate Create, Update and Public models per resource."""
