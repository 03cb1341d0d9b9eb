// Send one small trace to an OTLP/HTTP endpoint with the OpenTelemetry JS SDK (as a Node.js service would).
// Usage: node send.mjs http://127.0.0.1:4318/v1/traces  -> prints {"traceId": "..."} once the exporter is flushed.
import { trace, SpanStatusCode, SpanKind } from "@opentelemetry/api";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";

const url = process.argv[2];
const exporter = new OTLPTraceExporter({ url });
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": "node-checkout", "telemetry.sdk.language": "nodejs" }),
  spanProcessors: [new BatchSpanProcessor(exporter)],
});
provider.register(); // the AsyncLocalStorage context manager: children find their parent
const tracer = provider.getTracer("spanstore-node-test", "1.0.0");

let traceId;
tracer.startActiveSpan("POST /checkout", { kind: SpanKind.SERVER, attributes: { "http.route": "/checkout" } }, (root) => {
  traceId = root.spanContext().traceId;
  tracer.startActiveSpan("charge card", { kind: SpanKind.CLIENT, attributes: { "payment.amount": 12.5 } }, (child) => {
    const error = new Error("card declined");
    child.recordException(error);
    child.setStatus({ code: SpanStatusCode.ERROR, message: "card declined" });
    child.end();
  });
  root.end();
});
await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify({ traceId }));
