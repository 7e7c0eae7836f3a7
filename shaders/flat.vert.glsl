#version 150
// Flat tiles by instancing (plazas, plots, and buildings seen from afar as their roofs): the top
// face only, lit as an upward face under the evening sun, glowing a little if asked, fogged.
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ModelViewMatrix;
uniform vec2 u_fog_range;
uniform vec3 u_fog_color;
in vec4 p3d_Vertex;
in vec4 i_offset;  // xyz: base centre; w: turn about z, radians
in vec4 i_scale;   // xyz: size; w: glow 0..1
in vec4 i_color;
in vec4 i_extra;
out vec3 v_rgb;

void main() {
    float c = cos(i_offset.w);
    float s = sin(i_offset.w);
    vec3 p = p3d_Vertex.xyz * i_scale.xyz;
    p = vec3(c * p.x - s * p.y, s * p.x + c * p.y, p.z) + i_offset.xyz;
    float dist = length((p3d_ModelViewMatrix * vec4(p, 1.0)).xyz);
    float fog = clamp((dist - u_fog_range.x) / max(u_fog_range.y - u_fog_range.x, 1e-3), 0.0, 1.0);
    v_rgb = mix(i_color.rgb * (0.95 + 0.35 * i_scale.w), u_fog_color, fog);
    gl_Position = p3d_ModelViewProjectionMatrix * vec4(p, 1.0);
}
