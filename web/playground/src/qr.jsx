// A QR code drawn here, as SVG, from the text it encodes (uqr, bundled): the secret in an
// otpauth:// URI never leaves the page for a QR service.
import React from "react";
import { encode } from "uqr";

export function QRCode({ text, id, size = 200 }) {
  const { data } = encode(text, { ecc: "M", border: 4 }); // rows of booleans, quiet zone included
  const n = data.length;
  let d = "";
  data.forEach((row, r) => row.forEach((dark, c) => { if (dark) d += `M${c} ${r}h1v1h-1z`; }));
  return (
    <svg id={id} className="qr" role="img" aria-label="QR code" width={size} height={size} viewBox={`0 0 ${n} ${n}`} shapeRendering="crispEdges">
      <rect width={n} height={n} fill="#fff" />
      <path d={d} fill="#000" />
    </svg>
  );
}
