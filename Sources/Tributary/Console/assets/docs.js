// The API reference, rendered from the server's own /openapi.json: one section per operation
// (parameters, request body, responses) and one per schema. Text only, never HTML from the document.
"use strict";

const $ = (selector) => document.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function slug(text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
}

/// A schema in one line: `Connector`, `array of Message`, `string (okx | binance)`, `integer 1–1000`.
function describe(schema) {
  if (!schema) return "";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return element("a", { href: "#schema-" + slug(name), text: name });
  }
  const span = element("span");
  if (schema.oneOf) {
    schema.oneOf.forEach((item, index) => {
      if (index) span.append(" or ");
      span.append(describe(item));
    });
    return span;
  }
  let type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
  if (type === "array" && schema.items) {
    span.append("array of ", describe(schema.items));
    return span;
  }
  if (schema.enum) type += " (" + schema.enum.join(" | ") + ")";
  if (schema.minimum !== undefined || schema.maximum !== undefined) type += ` ${schema.minimum ?? ""}–${schema.maximum ?? ""}`;
  if (schema.format) type += `, ${schema.format}`;
  span.append(type);
  if (schema.description) span.append(element("span", { class: "muted", text: " — " + schema.description }));
  return span;
}

function table(headers, rows) {
  const head = element("tr", {}, ...headers.map((text) => element("th", { scope: "col", text })));
  const body = element("tbody", {}, ...rows.map((cells) => element("tr", {}, ...cells.map((cell) => element("td", {}, cell)))));
  return element("div", { class: "table-wrap" }, element("table", {}, element("thead", {}, head), body));
}

function render(spec) {
  const info = spec.info || {};
  $("#intro").textContent = `${info.title || "API"} ${info.version || ""}. ${info.description || ""}`;
  const toc = $("#toc");
  const operations = $("#operations");
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const [method, operation] of Object.entries(item)) {
      const id = "op-" + slug(method + " " + path);
      toc.append(element("div", {}, element("a", { href: "#" + id, text: `${method.toUpperCase()} ${path}` })));
      const section = element("section", { class: "op", id });
      section.append(
        element(
          "h3",
          {},
          element("span", { class: "method " + method, text: method.toUpperCase() }),
          element("code", { text: path }),
          element("span", { class: "muted", text: operation.summary || "" })
        )
      );
      if (operation.description) section.append(element("p", { text: operation.description }));
      const parameters = operation.parameters || [];
      if (parameters.length) {
        section.append(element("h4", { text: "Parameters" }));
        section.append(
          table(
            ["name", "in", "required", "schema", "description"],
            parameters.map((parameter) => [
              element("code", { text: parameter.name }),
              parameter.in,
              parameter.required ? "yes" : "no",
              describe(parameter.schema),
              parameter.description || "",
            ])
          )
        );
      }
      const body = operation.requestBody && operation.requestBody.content && operation.requestBody.content["application/json"];
      if (body) {
        section.append(element("h4", { text: "Request body (application/json)" }));
        section.append(element("p", {}, describe(body.schema)));
      }
      const responses = Object.entries(operation.responses || {});
      if (responses.length) {
        section.append(element("h4", { text: "Responses" }));
        section.append(
          table(
            ["status", "description", "body"],
            responses.map(([status, response]) => {
              const content = response.content && (response.content["application/json"] || Object.values(response.content)[0]);
              return [element("code", { text: status }), response.description || "", content ? describe(content.schema) : ""];
            })
          )
        );
      }
      operations.append(section);
    }
  }
  const schemas = (spec.components && spec.components.schemas) || {};
  if (Object.keys(schemas).length) $("#schemas-heading").hidden = false;
  for (const [name, schema] of Object.entries(schemas)) {
    const section = element("section", { class: "op", id: "schema-" + slug(name) });
    section.append(element("h3", {}, element("code", { text: name })));
    const required = new Set(schema.required || []);
    const properties = Object.entries(schema.properties || {});
    if (properties.length) {
      section.append(
        table(
          ["field", "required", "schema"],
          properties.map(([field, property]) => [element("code", { text: field }), required.has(field) ? "yes" : "", describe(property)])
        )
      );
    } else section.append(element("p", {}, describe(schema)));
    $("#schemas").append(section);
  }
  if (location.hash) {
    const anchor = document.getElementById(location.hash.slice(1));
    if (anchor) anchor.scrollIntoView();
  }
}

fetch("/openapi.json", { headers: { Accept: "application/json" } })
  .then((response) => {
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  })
  .then(render)
  .catch((error) => {
    $("#intro").textContent = "Could not load /openapi.json: " + error.message;
  });
