// Swagger UI over this service's own OpenAPI document (relative URL: works behind any prefix).
// validatorUrl null: no badge, which would send the document to validator.swagger.io.
"use strict";

window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
});
